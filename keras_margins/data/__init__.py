"""Long-tailed data: profiles, subsampling, readers, builders, samplers, augmentation.

Every builder returns ``(train, test, info)`` and takes ``pipeline=``:

- ``"tfdata"``: batched ``tf.data`` pipelines (Keras preprocessing layers for
  augmentation); they feed ``model.fit`` on every backend but need TensorFlow;
- ``"numpy"``: ``ArrayBatches``, a ``keras.utils.PyDataset`` built on NumPy and
  Pillow only (``readers``, ``numpy_augment``), for JAX / PyTorch machines
  without TensorFlow;
- ``"arrays"``: the selected NumPy arrays themselves;
- ``"auto"`` (default): ``"tfdata"`` when TensorFlow imports, else ``"numpy"``.

The subset and ``info`` do not depend on the pipeline. Importing this package
never imports TensorFlow; it is imported when a tf.data pipeline is built
(``ImportError`` naming ``keras-margins[data]`` when it is missing).

    train, test, info = keras_margins.data.cifar10_lt(100, folder="cifar10-jpeg.tar.gz")
    model.compile(loss=keras_margins.losses.LDAMLoss(info.class_counts), ...)
    model.fit(train, validation_data=test, epochs=200)
"""

from keras_margins.data.archives import extract_archive, resolve_image_root
from keras_margins.data.augment import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD,
                                        IMAGENET_MEAN, IMAGENET_STD, cifar_transform,
                                        imagenet_transform, mix_transform, normalizer)
from keras_margins.data.batches import ArrayBatches, limit_batches
from keras_margins.data.builders import (PIPELINES, LongTailInfo, arrays_lt, cifar10_lt,
                                         cifar100_lt, fashion_mnist_lt, image_folder_lt,
                                         resolve_pipeline, split_file_dataset, split_file_lt)
from keras_margins.data.device_augment import RandomPadCropFlip
from keras_margins.data.folders import check_image_file, list_image_folder
from keras_margins.data.numpy_augment import (get_numpy_transform, numpy_cifar_transform,
                                              numpy_imagenet_transform, numpy_normalizer)
from keras_margins.data.pipeline import decode_image_fn, make_pipeline
from keras_margins.data.profiles import imbalance_ratio_of, long_tail_counts
from keras_margins.data.readers import (read_cifar_batches, read_fashion_mnist, read_idx,
                                        read_image, read_image_folder, read_images)
from keras_margins.data.samplers import (Sampler, class_balanced, deferred, instance_balanced,
                                         progressive, sampling_probabilities, square_root)
from keras_margins.data.split_files import read_inaturalist_json, read_split, read_split_file
from keras_margins.data.subsample import (class_counts_of, subsample_arrays, subsample_dataset,
                                          subsample_indices)

__all__ = [
    "long_tail_counts", "imbalance_ratio_of", "extract_archive", "resolve_image_root",
    "subsample_indices", "subsample_arrays", "subsample_dataset", "class_counts_of",
    "LongTailInfo", "PIPELINES", "resolve_pipeline", "arrays_lt", "image_folder_lt",
    "cifar10_lt", "cifar100_lt", "fashion_mnist_lt", "split_file_dataset", "split_file_lt",
    "read_idx", "read_fashion_mnist", "read_cifar_batches", "read_image", "read_images",
    "read_image_folder", "list_image_folder", "check_image_file",
    "read_split_file", "read_inaturalist_json", "read_split",
    "Sampler", "sampling_probabilities", "instance_balanced", "class_balanced", "square_root",
    "progressive", "deferred",
    "cifar_transform", "imagenet_transform", "mix_transform", "normalizer",
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN",
    "IMAGENET_STD", "decode_image_fn", "make_pipeline",
    "ArrayBatches", "limit_batches", "numpy_normalizer", "numpy_cifar_transform", "numpy_imagenet_transform",
    "get_numpy_transform", "RandomPadCropFlip",
]
