"""``dpgen report``: PNG figures of a run and one offline ``report.html`` that shows them."""

from dpgen_ng.report.page import write_report

__all__ = ["write_report"]
