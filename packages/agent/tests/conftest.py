from agent_testing import *  # noqa: F401,F403
