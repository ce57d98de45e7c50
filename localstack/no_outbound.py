# Loaded by LocalStack at start (init/start.d). Storing a Lambda zip otherwise makes a DNS lookup
# of s3.localhost.localstack.cloud; the local AWS must make no connection outside loopback.
import localstack.utils.aws.aws_stack as aws_stack

aws_stack.CACHE_S3_HOSTNAME_DNS_STATUS = False
