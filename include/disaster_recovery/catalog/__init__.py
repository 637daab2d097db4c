"""The backup catalog: file names, typed manifests, and listing them in a bucket."""
