"""Errors every layer may raise or catch, kept here (no imports) so that the lowest layer can raise them and any
layer above can tell them apart."""

from __future__ import annotations


class PromptTooLong(ValueError):
    """A prompt that does not fit in the model's context (``context`` tokens) with the ``reserved`` tokens it must
    leave for what is generated after it. Raised before the model is asked, so the failure is one problem's, named,
    instead of a silent truncation, an empty answer or an out-of-memory error. It crosses process boundaries (a model
    served in its own process, an eval worker): ``__reduce__`` rebuilds it from its numbers."""

    def __init__(self, tokens: int, context: int, reserved: int = 0):
        self.tokens, self.context, self.reserved = tokens, context, reserved
        message = f"prompt of {tokens} tokens exceeds the context of {context}"
        if tokens <= context:  # it fits alone, not with the room it must leave
            message += f" less the {reserved} token{'s' if reserved != 1 else ''} it must leave for generation"
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.tokens, self.context, self.reserved)


class Cancelled(Exception):
    """The work of a problem whose tree was cancelled (``Tree.cancel``: a server's client went away, or its stop
    string was reached): raised in the search that was solving it, at its next model call or in the one it waits
    on (the scheduler takes that call's sequences out of the running batch)."""
