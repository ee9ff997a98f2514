"""The course's exercises and their checkers.

An exercise asks the learner to write one piece of the model in a notebook cell (say, the
layer-norm backward pass); its checker, called right after, runs the learner's function on
small random float64 inputs (and, once those pass, often on float32 inputs as training uses),
compares each result with the right answer (finite differences for gradients, the package's
own code or a closed form for values) and prints, for every output, whether it is right.
Tolerances follow the dtype: a correct answer computed in float32 is accepted, judged by
float32's rounding rather than float64's. For a wrong output it says by how much (relative
to the size of the expected tensor, so "twice too big" reads 1 and "a hundred times too big"
reads 99), where (the worst element, yours next to the expected value) and, when the pattern
is a known one, the likely mistake:

    >>> from numpygpt.course.exercises import check_layernorm_backward
    >>> report = check_layernorm_backward(my_layernorm_backward)
    layer norm backward
    ✗ dx  wrong: max error 0.371 x max|expected| (must be < 1e-07)
        worst at dx[1, 0, 5]: yours 0.01431, expected -0.1699
        this looks like: the -mean(g) term is missing: the mean of x depends on every x_i, so each
          dx_i gets a share of -mean(g)
    ✓ dw  max error 2.2e-14 x max|expected| (must be < 1e-07)
    ✓ db  max error 6.8e-14 x max|expected| (must be < 1e-07)
    wrong: dx

The checkers never raise: a stub that still raises NotImplementedError gets "not implemented
yet", one that returns None gets "returned None", and an error in the learner's code is shown
with the learner's own line. Every checker returns a Report: `report.ok` is True when
everything matched, `report.wrong` lists the outputs that did not, `str(report)` is the text
printed (pass show=False to print nothing). A notebook that needs the function afterwards
falls back to the package's version until the learner's own passes, e.g.
`top_p_filter = my_top_p_filter if report.ok else reference_top_p_filter`.

One module per notebook with exercises (`ch05_attention`: the softmax and attention backward
passes), each with its catalogue of typical mistakes, its reference functions and its
`check_*` functions; `checking` (with `diagnosis` and `report`) is the machinery they share.
"""

from ...models.gpt import param_count
from .ch00_overview import check_sequence_nll
from .ch01_tokens import check_embedding_backward
from .ch02_positions import check_sinusoidal_table
from .ch03_linear_gelu import check_gelu_backward, check_linear_backward
from .ch04_layernorm import check_layernorm_backward
from .ch05_attention import check_attention_backward, check_softmax_backward
from .ch06_cross_entropy import check_cross_entropy_backward
from .ch07_gpt import (
    check_block_backward,
    check_dropout_backward,
    check_dropout_forward,
    check_lm_head_backward,
    check_param_count,
)
from .ch08_optimisers import check_adamw_step
from .ch09_training import check_cosine_lr
from .ch10_sampling import (
    check_cached_attention_step,
    check_top_p_filter,
    reference_cached_attention_step,
    reference_top_p_filter,
)
from .ch11_inside_model import check_cosine_similarity, reference_cosine_similarity
from .ch12_applications import check_prompt_targets, reference_prompt_targets
from .ch13_bpe import check_merge
from .ch14_gpt2 import check_token_surprisal, reference_token_surprisal
from .ch15_training_dynamics import bigram_model, check_bigram_model
from .ch16_classification import check_classifier_backward
from .ch17_instruction_tuning import (
    check_sequence_mean_ce_backward,
    sequence_mean_ce_backward,
    sequence_mean_ce_forward,
)
from .ch18_lora import check_lora_backward
from .ch19_data_parallel import check_data_parallel_grads, reference_data_parallel_grads
from .ch20_llama import check_rmsnorm_backward
from .ch21_translation import check_my_chinese, reference_chinese, translation_runs
from .ch22_dpo import check_dpo_loss_backward, check_dpo_loss_forward
from .ch23_flash import check_online_softmax_step, reference_online_softmax_step
from .checking import check_backward, fast_mode
from .diagnosis import MATCH
from .report import Report

__all__ = [
    # the machinery
    "MATCH", "Report", "check_backward", "fast_mode",
    # one notebook after another
    "check_sequence_nll",
    "check_embedding_backward",
    "check_sinusoidal_table",
    "check_linear_backward", "check_gelu_backward",
    "check_layernorm_backward",
    "check_softmax_backward", "check_attention_backward",
    "check_cross_entropy_backward",
    "check_dropout_forward", "check_dropout_backward", "check_block_backward",
    "check_lm_head_backward", "check_param_count", "param_count",
    "check_adamw_step",
    "check_cosine_lr",
    "reference_top_p_filter", "check_top_p_filter",
    "reference_cached_attention_step", "check_cached_attention_step",
    "reference_cosine_similarity", "check_cosine_similarity",
    "reference_prompt_targets", "check_prompt_targets",
    "check_merge",
    "reference_token_surprisal", "check_token_surprisal",
    "bigram_model", "check_bigram_model",
    "check_classifier_backward",
    "sequence_mean_ce_forward", "sequence_mean_ce_backward", "check_sequence_mean_ce_backward",
    "check_lora_backward",
    "reference_data_parallel_grads", "check_data_parallel_grads",
    "check_rmsnorm_backward",
    "check_my_chinese", "reference_chinese", "translation_runs",
    "check_dpo_loss_forward", "check_dpo_loss_backward",
    "reference_online_softmax_step", "check_online_softmax_step",
]
