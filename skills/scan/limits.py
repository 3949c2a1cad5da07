"""The scan's sizes and caps, in one place. The scan reads them as `limits.NAME` when it runs (not imported by
name), so a test can shrink the blocks and reads for the whole scan at once."""

HEAD_BYTES = 8192                          # text/binary decision and magic bytes
CHUNK_BYTES = 1 << 20                      # read size
BLOCK_CHARS = 1 << 20                      # text scanned per block
CONTEXT_LINES, CONTEXT_CHARS = 8, 8192     # carried into the next block
MAX_TOTAL_UNCOMPRESSED = 200 * 1024 * 1024
MAX_RATIO = 100
RATIO_MIN_BYTES = 10 * 1024 * 1024
MAX_MEMBERS = 10_000
MAX_NESTED_ZIP_BYTES = 64 * 1024 * 1024
MAX_FINDINGS_PER_RULE = 20
BLOB_MIN_CHARS = 200
