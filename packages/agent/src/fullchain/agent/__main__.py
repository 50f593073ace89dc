from fullchain.core.worker import main

main("agent")
