from fullchain.core.worker import main

main("eval")
