"""Stage 2: fine-tune MobileNetV2 as a binary "is this the celebrity" classifier, measure it honestly, scan huge image sets."""
