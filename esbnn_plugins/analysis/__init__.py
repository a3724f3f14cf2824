"""Complexity (BOPs, FLOPs, OPs, parameters, size), representation capacity and replica diversification of ES-BNNs;
benchmark helpers (tables, stored runs)."""
from .capacity import LayerCapacity, binary_sums, capacity_table, plot_capacity, representation_capacity
from .complexity import ComplexityReport, LayerComplexity, complexity
from .diversification import ReplicaPoint, plot_replicas, replica_points, supported_layers
from .runs import cpu_label, seed_spread, stored_result, stored_run, text_digest
from .samples import photo_batch
from .table import format_table, write_section

__all__ = ["LayerCapacity", "binary_sums", "capacity_table", "plot_capacity", "representation_capacity",
           "ComplexityReport", "LayerComplexity", "complexity", "ReplicaPoint", "plot_replicas", "replica_points",
           "supported_layers", "cpu_label", "seed_spread", "stored_result", "stored_run", "text_digest", "photo_batch",
           "format_table", "write_section"]
