"""The script that Orthanc's ``PythonScript`` option points at.

It only connects Orthanc to the package: all logic lives in ``orthanc_transfers``.
A script of your own can import this module instead of being loaded beside it (the
Python plugin runs one script): ``host`` then accepts your change listeners.
"""

from orthanc_transfers.app import install
from orthanc_transfers.host import OrthancHost

host = OrthancHost()
app = install(host)
