from deploy_testing import *  # noqa: F401,F403
