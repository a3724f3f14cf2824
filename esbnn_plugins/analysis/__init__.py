"""Complexity (BOPs, FLOPs, OPs, parameters, size) and representation capacity of ES-BNNs."""
from .capacity import LayerCapacity, binary_sums, capacity_table, plot_capacity, representation_capacity
from .complexity import ComplexityReport, LayerComplexity, complexity
from .samples import photo_batch
from .table import format_table

__all__ = ["LayerCapacity", "binary_sums", "capacity_table", "plot_capacity", "representation_capacity",
           "ComplexityReport", "LayerComplexity", "complexity", "photo_batch", "format_table"]
