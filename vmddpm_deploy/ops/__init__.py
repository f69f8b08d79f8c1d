"""The op contract: ``selective_scan``, ``cross_scan``, ``cross_merge`` (docs/design.md section 2).

Importing this package registers the ``vmddpm::`` torch custom ops.
"""

from vmddpm_deploy.ops.reference import cross_merge_ref, cross_scan_ref, selective_scan_ref
from vmddpm_deploy.ops.scan_orders import NUM_ROUTES, SCAN_ORDERS, scan_table
from vmddpm_deploy.ops.torch_ops import cross_merge, cross_scan, selective_scan

__all__ = [
    "NUM_ROUTES",
    "SCAN_ORDERS",
    "cross_merge",
    "cross_merge_ref",
    "cross_scan",
    "cross_scan_ref",
    "scan_table",
    "selective_scan",
    "selective_scan_ref",
]
