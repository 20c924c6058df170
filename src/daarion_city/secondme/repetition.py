"""A stop on repeated lines for streamed model output.

Small models fall into loops: the same line again and again. :class:`LineRepeatGuard` passes text
through as it streams and stops the answer when a line repeats an earlier line of it; the
repeated line itself is never passed on. Text that may be the start of such a repeat (the line so
far is the beginning of an earlier line) is held back until it differs, so the rest of the
answer still streams token by token.
"""

from __future__ import annotations


class LineRepeatGuard:
    def __init__(self, *, min_chars: int = 4) -> None:
        self.min_chars = min_chars  # shorter lines ("", "---", "1.") may repeat freely
        self.seen: set[str] = set()
        self.line = ""  # the current line so far
        self.held = ""  # its part not passed on yet
        self.stopped = False

    def _repeats(self, line: str) -> bool:
        key = line.strip()
        return len(key) >= self.min_chars and key in self.seen

    def feed(self, text: str) -> str:
        """What of ``text`` may be passed on now; after a repeat, ``stopped`` is set."""
        out: list[str] = []
        for ch in text:
            if self.stopped:
                break
            if ch == "\n":
                if self._repeats(self.line):
                    self.stopped = True
                    self.held = ""
                    break
                key = self.line.strip()
                if len(key) >= self.min_chars:
                    self.seen.add(key)
                out.append(self.held + ch)
                self.line = self.held = ""
                continue
            self.line += ch
            self.held += ch
            start = self.line.lstrip()
            if start and not any(prev.startswith(start) for prev in self.seen):
                out.append(self.held)
                self.held = ""
        return "".join(out)

    def finish(self) -> str:
        """The held end of the answer, unless it is a repeat."""
        if self.stopped or self._repeats(self.line):
            return ""
        held, self.held = self.held, ""
        return held
