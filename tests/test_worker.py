import threading

from app.worker import Worker


def test_worker_keeps_running_after_a_failing_tick_and_stops_on_request():
    calls = []
    done = threading.Event()

    def tick():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        if len(calls) >= 3:
            done.set()

    worker = Worker(tick, interval=0.01)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert done.wait(5)
    worker.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert len(calls) >= 3
