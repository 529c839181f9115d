"""Long-tailed data on tf.data: profiles, subsampling, builders, samplers, augmentation.

Pipelines are ``tf.data`` and feed ``model.fit`` on every Keras backend
(TensorFlow, JAX, PyTorch); this subpackage is the only part of
``keras_margins`` that imports TensorFlow (on first use of ``keras_margins.data``).

    train_ds, test_ds, info = keras_margins.data.cifar10_lt(imbalance_ratio=100)
    model.compile(loss=keras_margins.losses.LDAMLoss(info.class_counts), ...)
    model.fit(train_ds, validation_data=test_ds, epochs=200)
"""

from keras_margins.data.archives import extract_archive, resolve_image_root
from keras_margins.data.augment import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD,
                                        IMAGENET_MEAN, IMAGENET_STD, cifar_transform,
                                        imagenet_transform, mix_transform, normalizer)
from keras_margins.data.builders import (LongTailInfo, arrays_lt, cifar10_lt, cifar100_lt,
                                         fashion_mnist_lt, image_folder_lt, read_idx,
                                         split_file_dataset, split_file_lt)
from keras_margins.data.folders import check_image_file, list_image_folder
from keras_margins.data.pipeline import decode_image_fn, make_pipeline
from keras_margins.data.profiles import imbalance_ratio_of, long_tail_counts
from keras_margins.data.samplers import (Sampler, class_balanced, deferred, instance_balanced,
                                         progressive, sampling_probabilities, square_root)
from keras_margins.data.split_files import read_inaturalist_json, read_split, read_split_file
from keras_margins.data.subsample import (class_counts_of, subsample_arrays, subsample_dataset,
                                          subsample_indices)

__all__ = [
    "long_tail_counts", "imbalance_ratio_of", "extract_archive", "resolve_image_root",
    "subsample_indices", "subsample_arrays", "subsample_dataset", "class_counts_of",
    "LongTailInfo", "arrays_lt", "image_folder_lt", "cifar10_lt", "cifar100_lt",
    "fashion_mnist_lt", "split_file_dataset", "split_file_lt", "read_idx",
    "list_image_folder", "check_image_file",
    "read_split_file", "read_inaturalist_json", "read_split",
    "Sampler", "sampling_probabilities", "instance_balanced", "class_balanced", "square_root",
    "progressive", "deferred",
    "cifar_transform", "imagenet_transform", "mix_transform", "normalizer",
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN",
    "IMAGENET_STD", "decode_image_fn", "make_pipeline",
]
