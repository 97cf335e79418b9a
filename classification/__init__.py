"""Stage 2: fine-tune MobileNetV2 as a binary "is this the celebrity" classifier, measure it honestly, scan huge
image sets; face-identity embeddings (dlib offline, facenet when its weights exist) as a second opinion."""
