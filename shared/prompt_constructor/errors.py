"""The one error of the prompt constructor: bad messages, unknown or failing templates."""

from __future__ import annotations


class PromptError(ValueError):
    """The messages or the template can not make a prompt.

    `field` names what was wrong in the caller's terms (``messages[2].role``, ``template``,
    ``metadata``) so an HTTP edge can list it as a field error without parsing the message;
    `reason` says what was wrong with it. ``str(err)`` is ``"<field>: <reason>"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
