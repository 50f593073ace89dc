"""Set-up shared by every test folder of the repository."""
import signal


def pytest_configure(config):
    # A shell starting a command in the background without job control (`cmd &` in a script,
    # nohup, some CI runners) sets SIGINT to "ignored", and every process started below inherits
    # that: the tests that press Ctrl-C on a runner, a server or a chat would see nothing happen.
    # Give the processes these tests start the disposition a terminal gives them.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
