"""The script that Orthanc's ``PythonScript`` option points at.

It only connects Orthanc to the package: all logic lives in ``orthanc_transfers``.
"""

from orthanc_transfers.app import install
from orthanc_transfers.host import OrthancHost

install(OrthancHost())
