"""egressctl's text output is built from what a held process chose (argv, its file's path, the
host it named): nothing in it may act on the approver's terminal or forge lines."""

from __future__ import annotations

from egressguard.approvals._proto import approvals_pb2 as pb
from egressguard.cli import ctl
from egressguard.cli.termsafe import printable

HOSTILE = ("\x1b[2J\x1b[H"                       # clear the screen, cursor home
           "\nh-aaaaaaaaaa  held 0s\n  who:   alice (uid 1000)"   # forged lines
           "\r\x1b]0;title\x07\x9b31m"            # carriage return, OSC title, C1 CSI
           "\u202egnp.exe\u200b\u2028end")        # bidi override, zero-width, line separator


def test_printable_escapes_everything_that_acts_on_a_terminal() -> None:
    out = printable(HOSTILE)
    assert out.isprintable()
    for bad in ("\x1b", "\n", "\r", "\x07", "\x9b", "\u202e", "\u200b", "\u2028"):
        assert bad not in out
    assert "\\x1b[2J" in out and "\\n" in out and "\\u202e" in out
    assert printable("plain text, ünïcode, 日本語 and spaces") == "plain text, ünïcode, 日本語 and spaces"


def _hostile_hold() -> pb.Hold:
    return pb.Hold(
        id="h-abcdefghij", flow_id="f-1", rule="r", reason="held", age_s=1, expires_in_s=60,
        on_timeout="deny",
        process=pb.Process(pid=7, uid=65534, user="nobody", exe="/tmp/" + HOSTILE,
                           comm="x\x1bc", cmdline=[HOSTILE, "--tag", "a\nb"]),
        destination=pb.Destination(ip="127.0.0.1", port=80, host="x.test"),
        detections=[pb.Detection(detector="secret.jwt", preview="eyJ***")])


def test_hold_event_and_flow_text_have_no_raw_control_characters() -> None:
    hold = _hostile_hold()
    text = ctl.hold_text(hold)
    assert len(text.splitlines()) == 6                  # exactly the six lines of one hold
    assert all(line.isprintable() for line in text.splitlines())
    assert "who:   nobody (uid 65534), pid 7 \\x1b[2J" in text
    event = pb.HoldEvent(kind=pb.HOLD_EVENT_KIND_OPENED, hold=hold, time=0.0)
    assert ctl.event_text(event).isprintable()
    flow = pb.Flow(flow_id="f-1", state="held", process=hold.process,
                   destination=hold.destination)
    table = ctl.flows_table([flow])
    assert len(table.splitlines()) == 2 and all(line.isprintable() for line in table.splitlines())
