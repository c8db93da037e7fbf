"""Python's cyclic garbage collection on the GUI thread only, while the dashboard has threads.

Python runs its cycle collector in whichever thread happens to allocate when a threshold is
crossed. If that is a worker thread (acquisition, DSP, recorder, an instrument panel's worker)
and the garbage holds a Qt object, the object's destructor runs on the worker: Qt then takes
the object's connection lock and calls back into Python for the GIL, while the GUI thread,
holding the GIL, waits for that lock (e.g. connecting a signal). Both wait for ever. This was
seen in CI: the dashboard froze while its job thread created an HDF5 dataset.

:func:`acquire` (called by whatever starts such threads next to Qt objects: the main window,
the instrument panels) collects once on the GUI thread, disables automatic collection and
collects on a GUI-thread timer instead, by generation as the thresholds say (the scheme of
``pyqtgraph.util.garbage_collector``). :func:`release` undoes it when the last user is gone,
after a full collection on the GUI thread. Reference counting frees everything else as usual;
only reference cycles wait for the timer.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QThread, QTimer

#: how often the GUI thread looks at the collector's counts [s]
INTERVAL_S = 0.5

_users = 0
_timer: QTimer | None = None
_was_enabled = True


def _check() -> None:
    """Collect the generations whose thresholds were crossed (GUI thread)."""
    t0, t1, t2 = gc.get_threshold()
    c0, c1, c2 = gc.get_count()
    if c0 > t0:
        gc.collect(0)
        if c1 > t1:
            gc.collect(1)
            if c2 > t2:
                gc.collect(2)


def _on_gui_thread() -> bool:
    app = QCoreApplication.instance()
    return app is not None and QThread.currentThread() == app.thread()


def acquire() -> None:
    """One more user of the policy (GUI thread, with a QApplication)."""
    global _users, _timer, _was_enabled
    if not _on_gui_thread():
        raise RuntimeError("gc_policy.acquire: call it on the GUI thread of a QApplication")
    if _users == 0:
        gc.collect()  # what earlier GUI code left behind goes now, here
        _was_enabled = gc.isenabled()
        gc.disable()
        _timer = QTimer()
        _timer.timeout.connect(_check)
        _timer.start(round(INTERVAL_S * 1000))
    _users += 1


def release() -> None:
    """One user less; the last one restores automatic collection (GUI thread)."""
    global _users, _timer
    if _users == 0:
        return
    _users -= 1
    if _users == 0:
        if _timer is not None:
            _timer.stop()
            _timer = None
        gc.collect()
        if _was_enabled:
            gc.enable()


def users() -> int:
    """How many users hold the policy now."""
    return _users
