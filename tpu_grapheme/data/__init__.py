"""Data layer: Kaggle-layout reader, synthetic generator, fold split, TFRecords, tf.data pipeline."""
