"""Django model fields encrypted with AWS KMS envelope encryption through the AWS Encryption SDK."""

__version__ = "0.1.0"
