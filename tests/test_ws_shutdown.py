"""SIGTERM drains /ws: clients are closed with 1001 at once, running runs finish and are stored,
and a restarted server replays them."""
from __future__ import annotations

import json
import os
import signal

import websocket

from .fake_provider import FakeProvider, Reply
from .support import LiveServer


def test_sigterm_closes_sockets_and_lets_the_run_finish(tmp_path):
    fake = FakeProvider().start()
    home = tmp_path / "home"
    text = "".join(f"[{i:02d}]" for i in range(20))
    fake.script(Reply(text, chunks=20, chunk_delay=0.1))
    server = LiveServer(home, workers=1, env=fake.environ()).start()
    restarted = None
    try:
        key = server.generated_admin_key()
        ws = websocket.create_connection(f"{server.ws_url}/ws?token={key}", timeout=15)
        ws.send(json.dumps({"type": "message", "text": "long one"}))
        start = json.loads(ws.recv())
        os.killpg(server.process.pid, signal.SIGTERM)
        while True:  # frames may still arrive until the close frame
            opcode, payload = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert int.from_bytes(payload[:2], "big") == 1001
        assert server.process.wait(30) == 0
        restarted = LiveServer(home, workers=1, env=fake.environ()).start()
        ws = websocket.create_connection(f"{restarted.ws_url}/ws?token={key}", timeout=15)
        ws.send(json.dumps({"type": "resume", "session_id": start["session_id"], "after_seq": 0}))
        frames = [json.loads(ws.recv())]
        while frames[-1]["type"] != "stream_end":
            frames.append(json.loads(ws.recv()))
        ws.close()
        assert "".join(f["text"] for f in frames if f["type"] == "text_delta") == text
        assert frames[-1]["errors"] == []
        rows = restarted.get(f"/api/sessions/{start['session_id']}/messages", key).json()
        assert rows[-1] == {**rows[-1], "role": "assistant", "content": text}
    finally:
        server.stop()
        if restarted:
            restarted.stop()
        fake.stop()
