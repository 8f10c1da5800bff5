"""Imported first by the runner's forkserver, and by nothing else: the forkserver ignores stop
signals.

A SIGTERM sent to the runner's whole process group (systemd's ``KillMode=control-group``,
dumb-init, ``kill -TERM -<pgid>``) also reaches the forkserver. Killed by it, the forkserver
would take every child with it (each dies with its parent, ``PR_SET_PDEATHSIG``), and every
running task with them, before the runner could finish them. The children ignore stop signals
themselves; the forkserver exits when the runner does (its pipe from the runner closes).
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
