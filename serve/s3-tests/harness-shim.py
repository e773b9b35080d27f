"""Makes s3-tests' bucket clean-up list objects where a store has no ListObjectVersions.

Usage: harness-shim.py PATH/s3tests/functional/__init__.py (idempotent).
"""
import sys

path = sys.argv[1]
text = open(path).read()
original = "        listing = client.list_object_versions(**kwargs)\n"
shim = """        try:
            listing = client.list_object_versions(**kwargs)
        except ClientError as e:
            # s3-compressor's shim: a store without ListObjectVersions lists its objects.
            if e.response['Error']['Code'] not in ('NotImplemented', 'MethodNotAllowed'):
                raise
            keys = get_objects_list(bucket, client)
            if keys:
                yield [{'Key': k} for k in keys]
            return
"""
if "s3-compressor's shim" not in text:
    if original not in text:
        sys.exit(f"{path}: list_versions is not as the shim expects; update harness-shim.py")
    open(path, "w").write(text.replace(original, shim, 1))
