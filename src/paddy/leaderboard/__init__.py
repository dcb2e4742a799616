"""After the pipeline: `paddy submit`, the ledger of submissions and their scores, `paddy compare`."""
