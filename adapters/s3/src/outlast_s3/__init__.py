"""outlast-s3: outlast's store on Amazon S3 and S3-compatible object stores.

``outlast.open("s3://bucket/prefix?region=eu-west-1")`` opens an
:class:`S3Store`; credentials come from boto3's normal chain.
"""

from outlast_s3.checkpointer import S3Checkpointer
from outlast_s3.options import S3Options, parse_url
from outlast_s3.store import S3Store

__all__ = ["S3Checkpointer", "S3Options", "S3Store", "parse_url"]
