"""Stage 2: fine-tune MobileNetV2 as a binary "is this the celebrity" classifier, measure it honestly, scan huge
image sets; face-identity embeddings (dlib offline, facenet when its weights exist) as a second opinion. Offline,
`pretrain` makes the backbone to transfer from (MobileNetV2 trained on the synthetic world's faces, `weights=
"synthetic"`), and `sweep` tunes the classifier's hyperparameters on validation (Optuna, resumable)."""
