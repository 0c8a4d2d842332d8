"""Resume replays: unsubscribe during a long replay (nothing of the channel may follow
'unsubscribed'), and unsubscribe+resubscribe with a resume in one write (the replay must be
complete: every offset after since once, in order, then live).
Usage: CHAT_PORT=... a09_resume.py [N]"""
import json, os, sys, time
from lib import WS, history, health_check
N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
CH = "res-" + os.urandom(3).hex()
w = WS(timeout=20)
for start in range(0, N, 100):
    w.raw(b"".join(w.frame(json.dumps({"type": "send", "id": f"r{i}", "channel": CH, "data": f"m{i} " + "p" * 500}).encode()) for i in range(start, min(N, start + 100))))
    n = 0
    while n < min(100, N - start):
        m = w.recv(10)
        if m["type"] in ("ack", "nack"): n += 1
        if m["type"] == "nack": print("nack", m); break
s, h = history(CH, limit=1)
epoch, last = h["epoch"], h["lastOffset"]
print("published", last, "epoch", epoch)
bad = 0
for trial in range(20):
    ws = WS(timeout=10)
    ws.raw(ws.frame(json.dumps({"type": "subscribe", "channel": CH, "since": 0, "epoch": epoch}).encode()))
    time.sleep(0.002 * trial)
    ws.raw(ws.frame(json.dumps({"type": "unsubscribe", "channel": CH}).encode()))
    got = ws.recv_all(1.5)
    types = [g["type"] for g in got]
    if "unsubscribed" not in types:
        print("no unsubscribed!", types[:5]); bad += 1; continue
    after = [g for g in got[types.index("unsubscribed") + 1:] if g.get("channel") == CH]
    if after:
        bad += 1; print(f"trial {trial}: {len(after)} frames of the channel after 'unsubscribed':", [a["type"] for a in after][:5])
    ws.close()
print("unsubscribe-during-replay problems:", bad, "(replayed before unsubscribe in last trial:", types.count("message"), ")")
bad = 0
for trial in range(10):
    ws = WS(timeout=10)
    since = 10 + trial * 100
    ws.send({"type": "subscribe", "channel": CH, "since": 5, "epoch": epoch})
    time.sleep(0.003 * trial)
    ws.raw(ws.frame(json.dumps({"type": "unsubscribe", "channel": CH}).encode()) + ws.frame(json.dumps({"type": "subscribe", "channel": CH, "since": since, "epoch": epoch}).encode()))
    got = []
    end = time.time() + 15
    while time.time() < end:
        m = ws.recv(5); got.append(m)
        if m["type"] == "message" and m["offset"] == last: break
    types = [g["type"] for g in got]
    i = types.index("unsubscribed")
    tail = [g for g in got[i + 1:] if g.get("channel") == CH]
    offs = [g["offset"] for g in tail if g["type"] == "message"]
    if offs != list(range(since + 1, last + 1)) or tail[0]["type"] != "subscribed":
        bad += 1; print(f"trial {trial}: after resubscribe since={since}: first {[t['type'] for t in tail[:3]]}, offsets {offs[:3]}..{offs[-3:]} len {len(offs)} expected {last-since}")
    ws.send({"type": "send", "id": f"live{trial}", "channel": CH, "data": "live"})
    m, _ = ws.until(lambda m: m.get("type") == "message" and m.get("data") == "live", 5)
    if not m: bad += 1; print("not live after replay")
    last += 1
    ws.close()
print("resubscribe-with-resume problems:", bad)
health_check("after a09")
