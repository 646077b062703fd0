-- Forwards every stable study to a peer through the transfers accelerator.
-- Orthanc configuration:  "LuaScripts": ["forward-stable-studies.lua"],
--                         "TransfersForwardPeer": "<a name of OrthancPeers>"
-- (The accelerator itself is loaded through "PythonScript": "plugin/transfers.py".)

local peer = GetOrthancConfiguration()['TransfersForwardPeer'] or 'remote'

function OnStableStudy(studyId, tags, metadata)
  local request = {
    Resources = { { Level = 'Study', ID = studyId } },
    Peer = peer,
    Compression = 'gzip'
  }
  -- 'false': the route belongs to a plugin, so it is not a built-in route
  local answer = ParseJson(RestApiPost('/transfers/send', DumpJson(request, true), false))
  print('Transfers accelerator: study ' .. studyId .. ' sent to ' .. peer .. ' by job ' ..
        (answer['ID'] or answer['RemoteJob']))
end
