#!/usr/bin/python3
"""Idle keep-alive connections for bench/gateway/run.sh.

    idle_conns.py PORT COUNT READY_FILE STOP_FILE [HOLD_SECONDS]

Opens COUNT connections to 127.0.0.1:PORT (at most 256 handshakes/requests in flight, so no
listen backlog overflows), sends one `GET /` on each and reads the whole response, and keeps every
connection open. When all are answered (or after 60 s) it writes "answered=N failed=M" to
READY_FILE, then holds the connections until STOP_FILE exists (at most HOLD_SECONDS, default
120), counts how many the server closed meanwhile ("closed_by_server=N" on stdout) and closes them
all with a reset (SO_LINGER 0, so no TIME_WAIT is left behind). Bounded in time; exits by itself.
"""
import os
import select
import socket
import struct
import sys
import time

port, count = int(sys.argv[1]), int(sys.argv[2])
ready_file, stop_file = sys.argv[3], sys.argv[4]
hold = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
IN_FLIGHT = 256
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: flotilla-bench-idle\r\n\r\n"
LINGER0 = struct.pack("ii", 1, 0)

ep = select.epoll()
socks = {}  # fd -> socket, every connection ever opened that is still held
state = {}  # fd -> bytearray of the response so far (only while waiting for it)
answered = failed = started = 0


def complete(buf):
    """True when buf holds a whole response (Content-Length or chunked); None if malformed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = bytes(buf[:end]).decode("latin-1").lower().split("\r\n")
    if not head[0].startswith("http/1.1 "):
        return None
    length = None
    chunked = False
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip() == "content-length":
            length = int(value.strip())
        elif name.strip() == "transfer-encoding" and "chunked" in value:
            chunked = True
    body = len(buf) - end - 4
    if chunked:
        return buf.endswith(b"0\r\n\r\n")
    return body >= (length or 0)


def fail(fd):
    global failed
    failed += 1
    ep.unregister(fd)
    state.pop(fd, None)
    socks.pop(fd).close()


deadline = time.monotonic() + 60
while (answered + failed < count) and time.monotonic() < deadline:
    while started < count and len(state) < IN_FLIGHT:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        started += 1
        if err not in (0, 115):  # 115: EINPROGRESS
            failed += 1
            s.close()
            continue
        socks[s.fileno()] = s
        state[s.fileno()] = None  # None: connecting
        ep.register(s.fileno(), select.EPOLLOUT)
    for fd, ev in ep.poll(0.5):
        s = socks[fd]
        if state[fd] is None:  # connected (or not)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                fail(fd)
                continue
            try:
                s.send(REQUEST)  # small enough for an empty send buffer
            except OSError:
                fail(fd)
                continue
            state[fd] = bytearray()
            ep.modify(fd, select.EPOLLIN)
            continue
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            fail(fd)
            continue
        if not data:
            fail(fd)
            continue
        buf = state[fd]
        buf += data
        done = complete(buf)
        if done is None or (done and not buf.startswith(b"HTTP/1.1 200")):
            fail(fd)
        elif done:
            answered += 1
            del state[fd]
            ep.unregister(fd)  # held idle; watched again at the end

with open(ready_file + ".tmp", "w") as f:
    f.write(f"answered={answered} failed={failed} unanswered={count - answered - failed}\n")
os.rename(ready_file + ".tmp", ready_file)

end = time.monotonic() + hold
while not os.path.exists(stop_file) and time.monotonic() < end:
    time.sleep(0.05)

# An answered connection that is readable now was closed by the server (or sent something unasked).
watch = select.epoll()
for fd in socks:
    if fd not in state:
        watch.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
closed = len(watch.poll(0, len(socks) + 1))
print(f"answered={answered} failed={failed} closed_by_server={closed}", flush=True)
for s in socks.values():
    s.close()
