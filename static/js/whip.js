// WHIP (publish) and WHEP (play) with non-trickle ICE: the offer is sent once
// ICE gathering is complete (or after 2 s), the answer comes back in the 201.

function waitForIce(pc, ms = 2000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
  } catch {
    throw { code: 'unavailable', message: 'The video server could not be reached.' };
  }
  const body = await res.text();
  if (res.status !== 201 && !res.ok) {
    let data = null;
    try { data = JSON.parse(body); } catch { /* plain text */ }
    const codes = { 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 409: 'conflict' };
    throw {
      code: (data && data.code) || codes[res.status] || 'unavailable',
      message: (data && data.message) || body || `Video negotiation failed (${res.status}).`,
      status: res.status,
    };
  }
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  const location = res.headers.get('Location');
  // Relative to the node that answered: a full node may have redirected us.
  return location ? new URL(location, res.url).href : null;
}

function session(pc, location, token, onState) {
  let stopped = false;
  pc.addEventListener('connectionstatechange', () => { if (!stopped && onState) onState(pc.connectionState); });
  return {
    pc,
    location,
    get stopped() { return stopped; },
    async stop() {
      if (stopped) return;
      stopped = true;
      pc.close();
      if (!location) return;
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      try { await fetch(location, { method: 'DELETE', headers, keepalive: true }); } catch { /* gone anyway */ }
    },
  };
}

/** Publishes `stream` to room over WHIP. Returns {pc, stop()}. */
export async function publish(room, token, stream, { onState, onPc } = {}) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  if (onPc) onPc(pc);
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  try {
    const location = await negotiate(pc, `/whip/${encodeURIComponent(room)}`, token);
    return session(pc, location, token, onState);
  } catch (e) {
    pc.close();
    throw e;
  }
}

/** Plays room over WHEP into videoEl. Returns {pc, stop()}. */
export async function play(room, token, videoEl, { onState, onPc } = {}) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  if (onPc) onPc(pc);
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const media = new MediaStream();
  pc.addEventListener('track', (e) => {
    media.addTrack(e.track);
    if (videoEl.srcObject !== media) videoEl.srcObject = media;
    videoEl.play().catch(() => { /* autoplay may wait for a gesture */ });
  });
  try {
    const location = await negotiate(pc, `/whep/${encodeURIComponent(room)}`, token);
    return session(pc, location, token, onState);
  } catch (e) {
    pc.close();
    throw e;
  }
}
