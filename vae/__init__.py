"""Stage 3: a convolutional VAE with a VGG perceptual loss on CelebA; morph GIFs; find and fine-tune on one identity."""
