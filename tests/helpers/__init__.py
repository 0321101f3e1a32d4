"""Scripts and helpers the tests run: a fake resuming audit (store_writer), headless Chromium."""
