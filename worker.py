"""`python worker.py [queues...]` as before; the worker lives in crm/worker.py (`crm worker`)."""
from crm.worker import main

if __name__ == "__main__":
    main()
