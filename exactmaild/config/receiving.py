"""The schedule and receive sections: when the mailbox is checked, and where its mail goes.

`schedule` checks the days, the window and the check times (`every`, `at`);
the send section reads the window's hours for its pacing too. `receive`
checks the Maildir and what happens to attachments. Called by the top-level
walk in `exactmaild.config.load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

from yaml.nodes import ScalarNode

from exactmaild.config import convert as conv
from exactmaild.config.model import ALL_DAYS, Incoming, Receive, Schedule
from exactmaild.config.schema import MIN_CHECK_INTERVAL, RECEIVE_KEYS, SCHEDULE_KEYS
from exactmaild.config.yamlnodes import Checker, Map, is_null
from exactmaild.core.pacing import format_seconds


def schedule_section(c: Checker, top: Map, receiving: bool) -> Schedule:
    m = c.mapping(top.get("schedule"), "schedule", SCHEDULE_KEYS, line=top.line)
    days = c.items(m, "days", conv.day, ALL_DAYS)
    if days is not None and not days:
        c.problem(m.key_line("days"), m.sub("days"), "empty: list at least one day, or omit it")
    days = tuple(d for d in ALL_DAYS if d in (days or ALL_DAYS))
    window = c.get(m, "window", conv.window, None)

    every: float | None = 300.0
    node = m.get("every")
    if node is not None:
        if is_null(node) or (
            isinstance(node, ScalarNode)
            and str(node.value).strip().lower() in ("off", "false", "none")
        ):
            every = None
        else:
            every = c.get(m, "every", conv.positive_duration, 300.0)
    at = tuple(sorted(set(c.items(m, "at", conv.hhmm, ()) or ())))
    if every is None and not at and receiving:
        c.problem(
            m.key_line("every"),
            m.sub("every"),
            "with every: off the mailbox is never checked: give every: (e.g. 5m) or at: times",
        )
    if every is not None and every < MIN_CHECK_INTERVAL and receiving:
        c.warn(
            f"schedule.every is {format_seconds(every)}: providers may object to checks more "
            "often than once a minute (throttling or blocking the account)"
        )
    return Schedule(days=days, window=window, every=every, at=at)


def receive_section(
    c: Checker, top: Map, incoming: Incoming | None, state_dir: Path
) -> Receive | None:
    m = c.mapping(top.get("receive"), "receive", RECEIVE_KEYS, line=top.line)
    maildir = c.get(m, "maildir", c.path, state_dir / "inbox")
    attachments = cast(
        Literal["keep", "strip", "extract"],
        c.get(m, "attachments", conv.choice("keep", "strip", "extract"), "keep"),
    )
    attachments_dir = c.get(m, "attachments_dir", c.path, None)
    group = c.get(m, "group", conv.group, None)
    if attachments == "extract" and attachments_dir is None and not m.given("attachments_dir"):
        c.problem(
            m.key_line("attachments"),
            m.sub("attachments_dir"),
            "required with attachments: extract (the directory attachments are saved to)",
        )
    sizes: dict[str, int] = {}
    if m.given("max_attachment_size"):
        sizes["max_attachment_size"] = c.get(m, "max_attachment_size", conv.positive_size, 1)
    if incoming is None:
        if m.entries:
            c.warn("the receive: section is ignored with incoming: none")
        return None
    return Receive(
        maildir=maildir,
        attachments=attachments,
        attachments_dir=attachments_dir,
        group=group,
        **sizes,
    )
