"""Training data for SDA models.

``model.data.synthetic`` renders a procedural temporal-reasoning video dataset (12 Something-Something-V2
style classes, numpy only) and writes it to disk in the Something-Something-V2 layout.
"""
