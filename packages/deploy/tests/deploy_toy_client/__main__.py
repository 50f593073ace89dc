from fullchain.core.worker import main

if __name__ == "__main__":
    main("deploy_client")
