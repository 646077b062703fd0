"""orthanc_transfers: a Transfers Accelerator for Orthanc, as a Python plugin.

The package is a pure core (no ``import orthanc``) plus one adapter, ``host.py``.
``plugin/transfers.py`` is the script Orthanc loads; it calls :func:`app.install`.
"""

__version__ = "0.1.0"
