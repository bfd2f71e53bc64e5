"""media domain: tus uploads, content-addressed photos, derivatives."""
