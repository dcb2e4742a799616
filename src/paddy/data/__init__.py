"""The competition on disk: its description read against its files, generated, downloaded, prepared, split."""
