"""Lab pipeline: student releases (``release``) and grading integrity helpers (``integrity``)."""

from cnncourse.grading.integrity import DelegationError, forbid

__all__ = ["DelegationError", "forbid"]
