"""ECG corpora (TFDS builders), preprocessing ops and the grain input pipeline.

The example schema every builder writes (ArrayRecord, read with
`tfds.data_source`, no TensorFlow):

  ecg            int16   [T, 12]  leads in LEAD_NAMES order; millivolts = ecg * ecg_scale
  ecg_scale      float32 []       millivolts per count
  lead_observed  bool    [12]     false for absent, all-NaN or flat leads (their samples are 0)
  valid_samples  int32   []       samples [valid_samples, T) are padding added by crop/pad
                                  (unobserved, stored as 0)
  report         text             cleaned report (bytes when read back)
  labels         bool    [C]      multi-hot; class names in `info.metadata["classes"]`
  id             text             source record id (also the TFDS key)
  patient_id     text             patient / subject id ('' when the corpus has none)
  source_rate    int32   []       original sampling rate in Hz
  source_length  int32   []       original number of samples

Builders may add corpus-specific features (e.g. PTB-XL's four label sets, the
synthetic corpus's evidence regions). The pipeline turns an example into
float32 `ecg [T, 12]` (normalised as configured), `lead_observed`,
`time_observed`, report tokens (or cached report features) and `labels`.
"""
