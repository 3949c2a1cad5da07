"""The command server inside a run's long-lived jail (harness/sandbox_jail.py starts it, with this file's source).

Standard library only: it runs as `python -I -S -c <this source> CTL LIMITS` with the Python already mounted in the
jail. CTL is the fd of a Unix socket to loopwright, on which the server first says `ready`; for each command
loopwright sends one byte on it with two fds: the command's own socket and the write end of its output pipe. On the
command's socket loopwright sends one JSON line `{"command", "cwd", "env"}`; the server starts `bash -c
LIMITS+command` in a new session (its own process group) with the pipe as stdout and stderr. Once bash exits, what
the command left running is killed, as a jail of its own would end it: its group, and every process of the jail
outside the sessions of the server and of commands still running (`setsid` or not); when they are gone the server
answers `exit CODE` (death by signal N as 128+N, as bwrap reports it). Requests on that socket: `end GRACE` (SIGTERM
the group, SIGKILL what is left after GRACE seconds) and `kill` (SIGKILL the group); loopwright closing it kills the
group. Closing CTL makes the server exit, and the jail with it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_group(pgid, grace):
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


active: set[int] = set()  # the sessions of the commands running (each command's pid: it leads a session of its own)
active_lock = threading.Lock()


def sweep(pid):
    """After command `pid`: kill what it (or any finished command) left in the jail; wait until they are gone."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = 0
        with active_lock:  # no command starts meanwhile (it would not be in `active` yet)
            active.discard(pid)
            keep = {os.getsid(0), *active}  # the server's session is the jail's own (0: it began outside)
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) in (1, os.getpid()):
                    continue
                try:
                    if os.getsid(int(name)) not in keep:
                        os.kill(int(name), signal.SIGKILL)
                        left += 1
                except OSError:
                    continue
        if not left:
            return
        time.sleep(0.005)


def serve(conn, out, limits):
    lock = threading.Lock()

    def say(line):
        with lock:
            try:
                conn.sendall(line.encode() + b"\n")
            except OSError:
                pass

    requests = conn.makefile("rb")
    try:
        req = json.loads(requests.readline())
        with active_lock:
            proc = subprocess.Popen(["/bin/bash", "-c", limits + req["command"]], cwd=req["cwd"], env=req["env"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
            active.add(proc.pid)
    except (OSError, ValueError, KeyError, TypeError) as e:
        try:
            os.write(out, f"[sandbox] the command could not start: {e}\n".encode())
        except OSError:
            pass
        os.close(out)
        say("exit 126")
        conn.close()
        return
    os.close(out)

    def wait():
        code = proc.wait()
        signal_group(proc.pid, signal.SIGKILL)
        sweep(proc.pid)
        say(f"exit {128 - code if code < 0 else code}")

    threading.Thread(target=wait, daemon=True).start()
    for line in requests:
        words = line.split()
        if words[:1] == [b"end"]:
            end_group(proc.pid, float(words[1]))
        elif words[:1] == [b"kill"]:
            signal_group(proc.pid, signal.SIGKILL)
    signal_group(proc.pid, signal.SIGKILL)  # loopwright is gone from the command: it ends
    conn.close()


def main():
    ctl = socket.socket(fileno=int(sys.argv[1]))
    limits = sys.argv[2]
    ctl.sendall(b"ready\n")
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1, 2)
        except OSError:
            break
        if not msg:
            break
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        threading.Thread(target=serve, args=(socket.socket(fileno=fds[0]), fds[1], limits), daemon=True).start()


if __name__ == "__main__":
    main()
