"""Photos and media: validation, EXIF evidence, derivatives, blob storage, tus uploads.

Framework-free (no Litestar, no database): the server mounts these pieces.

- `media.validate`  Limits, validate(): type by content, size, pixels, bombs, corruption
- `media.process`   ingest() -> IngestResult (hash, EXIF, upright size, public derivatives);
                    store_ingested()
- `media.exif`      ExifInfo, read_exif(): GPS and capture time as evidence
- `media.store`     BlobStore protocol, DiskBlobStore, S3BlobStore, content-addressed keys
- `media.tus`       UploadManager and header helpers for the tus 1.0.0 protocol
- `media.errors`    MediaRejected(code, detail) and BlobNotFound

See docs/media.md.
"""
