"""Under `quick`, every learner draws batches of the size CFCQL's runs used, so that the
leaderboard compares algorithms at one budget."""
import pytest

from baselines.base import QUICK_EPISODE_BATCH, QUICK_TRANSITION_BATCH
from baselines.bc import BCContinuous, BCDiscrete
from baselines.cfcql import CFCQLContinuous, CFCQLDiscrete
from baselines.icql import ICQL
from baselines.macql_discrete import MACQLDiscrete
from baselines.macql_continuous import MACQLContinuous
from baselines.madtkd import MADTKDDiscrete
from baselines.maicq_discrete import MAICQDiscrete
from baselines.matd3bc import MATD3BC
from baselines.omar_continuous import OMARContinuous
from baselines.omar_discrete import OMARDiscrete

DISCRETE = "smac-2s3z-medium-v0"
CONTINUOUS = "mpe-world-medium-v0"


@pytest.mark.parametrize("cls, field", [
    (CFCQLDiscrete, "batch_size"), (BCDiscrete, "episode_batch_size"),
    (MACQLDiscrete, "batch_size"), (MAICQDiscrete, "batch_size"), (OMARDiscrete, "batch_size"),
    (MADTKDDiscrete, "batch_size"),
])
def test_discrete_learners_draw_the_same_episode_batch_under_quick(cls, field):
    assert getattr(cls.config_for(DISCRETE, protocol="quick"), field) == QUICK_EPISODE_BATCH


@pytest.mark.parametrize("cls, field", [
    (CFCQLContinuous, "batch_size"), (BCContinuous, "transition_batch_size"), (ICQL, "batch_size"),
    (OMARContinuous, "batch_size"), (MACQLContinuous, "batch_size"), (MATD3BC, "batch_size"),
])
def test_continuous_learners_draw_the_same_transition_batch_under_quick(cls, field):
    assert getattr(cls.config_for(CONTINUOUS, protocol="quick"), field) == QUICK_TRANSITION_BATCH
    # The authors' sizes stay the default outside `quick`.
    assert getattr(cls.config_for(CONTINUOUS), field) == 1024
