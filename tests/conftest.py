"""Shared fixtures."""

from tests.support.browser import *  # noqa: F403
from tests.support.database import *  # noqa: F403
from tests.support.gateway import *  # noqa: F403
from tests.support.process import *  # noqa: F403
from tests.support.services import *  # noqa: F403
from tests.support.upstreams import *  # noqa: F403
