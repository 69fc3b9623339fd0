"""Generated from proto/egressguard/v1/approvals.proto by gen_proto.py. Do not edit."""
