// Transfers accelerator button for the legacy Orthanc Explorer (jQuery 1.7, jQuery Mobile 1.1).
// On the patient, study and series pages, a button lists the peers of /transfers/peers
// (peers without the plugin are greyed out), sends with /transfers/send, then opens the
// job: the push job, or in pull mode the local job that tracks the peer's pull job.
(function () {
  var PAGES = { patient: 'Patient', study: 'Study', series: 'Series' };

  function closeChooser() {
    $('#transfers-chooser').remove();
  }

  function openJob(jobId) {
    closeChooser();
    window.location.href = 'explorer.html#job?uuid=' + jobId;
  }

  function findTrackingJob(remoteJob, attempts) {
    $.ajax({ url: '../jobs?expand', dataType: 'json', cache: false })
      .done(function (jobs) {
        for (var i = 0; i < jobs.length; i++) {
          var content = jobs[i].Content || {};
          if (content.RemoteJob === remoteJob) { return openJob(jobs[i].ID); }
        }
        if (attempts > 0) {
          setTimeout(function () { findTrackingJob(remoteJob, attempts - 1); }, 300);
        } else {
          closeChooser();
          alert('The peer is pulling (remote job ' + remoteJob + ').');
        }
      });
  }

  function send(level, id, peer) {
    $('#transfers-chooser .transfers-status').text('Creating the transfer job...');
    $.ajax({
      url: '../transfers/send', type: 'POST', dataType: 'json',
      data: JSON.stringify({ Resources: [{ Level: level, ID: id }],
                             Compression: 'gzip', Peer: peer })
    }).done(function (answer) {
      if (answer.ID) { openJob(answer.ID); }
      else if (answer.RemoteJob) { findTrackingJob(answer.RemoteJob, 10); }
    }).fail(function (xhr) {
      var message = 'Error while creating the transfer job';
      try { message += ': ' + JSON.parse(xhr.responseText).Message; } catch (e) { }
      $('#transfers-chooser .transfers-status').text(message);
    });
  }

  function showChooser(level, id) {
    closeChooser();
    var box = $('<div id="transfers-chooser">').css({
      position: 'fixed', top: '15%', left: '50%', width: '320px', marginLeft: '-160px',
      background: '#fff', border: '1px solid #888', borderRadius: '6px',
      padding: '12px', zIndex: 10000, boxShadow: '0 4px 16px rgba(0,0,0,.4)'
    });
    box.append($('<h3>').text('Choose Orthanc peer'));
    var list = $('<div class="transfers-peers">').text('Probing peers...');
    box.append(list);
    box.append($('<p class="transfers-status">'));
    box.append($('<a href="#" class="transfers-close">').text('Close').click(function () {
      closeChooser(); return false;
    }));
    $('body').append(box);
    $.ajax({ url: '../transfers/peers', dataType: 'json', cache: false })
      .done(function (peers) {
        list.empty();
        var names = Object.keys(peers).sort();
        if (names.length === 0) { list.text('No peer is configured (OrthancPeers).'); }
        $.each(names, function (_, name) {
          var status = peers[name];
          var usable = status === 'installed' || status === 'bidirectional';
          var item = $('<button type="button" class="transfers-peer">')
            .attr('data-peer', name).text(name + ' (' + status + ')')
            .css({ display: 'block', width: '100%', margin: '4px 0' });
          if (usable) { item.click(function () { send(level, id, name); }); }
          else { item.attr('disabled', 'disabled').css({ opacity: 0.4 }); }
          list.append(item);
        });
      })
      .fail(function () { list.text('Cannot list the peers (/transfers/peers).'); });
  }

  $.each(PAGES, function (page, level) {
    $('#' + page).live('pagebeforeshow', function () {
      if ($('#' + page + '-transfers').length) { return; }
      var button = $('<a>').attr({ id: page + '-transfers', href: '#', 'data-role': 'button',
                                   'data-icon': 'forward', 'data-theme': 'e' })
        .text('Transfers accelerator').button();
      button.insertBefore($('#' + page + '-delete').parent().parent());
      button.click(function () {
        showChooser(level, $.mobile.pageData.uuid);
        return false;
      });
    });
  });
})();
