"""The per-connection router, sans-I/O: upstream's replies and hatchway's additions."""

from __future__ import annotations

import signal

from hatchway.agent import protocol as p
from hatchway.agent import router as r
from hatchway.agent.signals import docker_exit_code, parse_signal


def replies(actions: list[r.Action]) -> list[p.AgentMessage]:
    return [a.message for a in actions if isinstance(a, r.Reply)]


def test_upstream_error_strings() -> None:
    router = r.Router(can_attach=False)
    assert replies(router.receive('{"type":"exec","cmd":["true"]}')) == [p.Error(message="exec requires id")]
    assert replies(router.receive('{"type":"exec","id":"e1"}')) == [p.Error(id="e1", message="exec requires cmd")]
    assert replies(router.receive('{"type":"attach"}')) == [p.Error(message="attach requires id")]
    assert replies(router.receive('{"type":"attach","id":"a1"}')) == [
        p.Error(id="a1", message="no main process to attach to")]
    assert replies(router.receive('{"type":"foo","id":"z"}')) == [p.Error(id="z", message="unknown message type: foo")]
    assert replies(router.receive('{"type":"stdout","id":"z"}')) == [
        p.Error(id="z", message="unknown message type: stdout")]


def test_session_lifecycle_and_duplicates() -> None:
    router = r.Router(can_attach=True)
    assert router.receive('{"type":"exec","id":"e1","cmd":["cat"]}') == [r.StartExec(p.Exec(id="e1", cmd=["cat"]))]
    duplicate = replies(router.receive('{"type":"exec","id":"e1","cmd":["cat"]}'))
    assert duplicate == [p.Error(id="e1", message="session id already in use: e1")]
    assert replies(router.receive('{"type":"attach","id":"e1"}'))[0].message.startswith("session id already in use")
    assert router.receive('{"type":"stdin","id":"e1","data":"aGk="}') == [r.WriteStdin("e1", b"hi")]
    assert router.receive('{"type":"stdin","id":"e1"}') == [r.WriteStdin("e1", b"")]
    assert router.receive('{"type":"close_stdin","id":"e1"}') == [r.CloseInput("e1")]
    assert router.receive('{"type":"resize","id":"e1","width":80,"height":24}') == [r.ResizeTerminal("e1", 80, 24)]
    assert router.receive('{"type":"detach","id":"e1"}') == [r.DetachSession("e1")]
    assert router.finished("e1", 0) == [r.Reply(p.Exit(id="e1", code=0))]
    assert router.kind("e1") is None
    # a finished id is free again
    assert isinstance(router.receive('{"type":"exec","id":"e1","cmd":["true"]}')[0], r.StartExec)
    assert router.spawn_failed("e1", "not found", 127) == [r.Reply(p.Error(id="e1", message="not found")),
                                                           r.Reply(p.Exit(id="e1", code=127))]


def test_unknown_ids_are_ignored_and_bad_input_gives_no_reply() -> None:
    router = r.Router(can_attach=False)
    for text in ('{"type":"stdin","id":"nope","data":"aGk="}', '{"type":"close_stdin","id":"nope"}',
                 '{"type":"signal","id":"nope","signal":"TERM"}', '{"type":"resize","id":"nope"}',
                 "{broken", '{"type":"exec","id":"e","cmd":7}'):
        assert replies(router.receive(text)) == []
    router.receive('{"type":"exec","id":"e1","cmd":["cat"]}')
    dropped = router.receive('{"type":"stdin","id":"e1","data":"aGk"}')  # missing padding
    assert replies(dropped) == [] and isinstance(dropped[0], r.Note)
    assert router.receive('{"type":"stdin","id":"e1","data":"aGk=\\r\\n"}') == [r.WriteStdin("e1", b"hi")]


def test_signals() -> None:
    router = r.Router(can_attach=False)
    router.receive('{"type":"exec","id":"e1","cmd":["cat"]}')
    assert router.receive('{"type":"signal","id":"e1","signal":"sigterm"}') == [r.SendSignal("e1", signal.SIGTERM)]
    assert replies(router.receive('{"type":"signal","id":"e1","signal":"BOGUS"}')) == [
        p.Error(id="e1", message="unknown signal: BOGUS")]
    for name in ("TERM", "SIGTERM", "sigterm", "Term", "SigTerm"):
        assert parse_signal(name) == signal.SIGTERM
    for name, number in (("KILL", 9), ("INT", 2), ("HUP", 1), ("QUIT", 3), ("USR1", 10), ("USR2", 12),
                         ("STOP", 19), ("CONT", 18), ("WINCH", 28), ("ALRM", 14), ("TRAP", 5), ("PIPE", 13),
                         ("15", 15), ("RTMIN+2", signal.SIGRTMIN + 2), ("RTMAX-1", signal.SIGRTMAX - 1)):
        assert parse_signal(name) == number, name
    for name in ("BOGUS", "SIG", "", "0", "999", "RTMIN+99"):
        assert parse_signal(name) is None, name
    assert docker_exit_code(-15) == 143 and docker_exit_code(-9) == 137 and docker_exit_code(3) == 3


def test_health_subscription() -> None:
    assert r.Router(can_attach=False, has_health=True).receive('{"type":"health"}') == [r.SubscribeHealth()]
    assert replies(r.Router(can_attach=False).receive('{"type":"health"}')) == [
        p.Error(message="no health check configured")]
    # a health message carrying a state is agent -> client only: unknown here, as upstream
    pushed = '{"type":"health","health":{"status":"healthy","failingStreak":0,"log":[]}}'
    assert replies(r.Router(can_attach=False, has_health=True).receive(pushed)) == [
        p.Error(message="unknown message type: health")]
