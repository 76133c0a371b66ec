"""The continuous behaviour model: one VAE on (s, a) whose per-agent reading is a density."""
import numpy as np
import torch

from baselines.behaviour import VAEBehaviour

# agent 0 has one real action dimension and one padded; agent 1 has two real ones
MASK = np.array([[True, False], [True, True]])
SAMPLES = 4000


def _vae() -> VAEBehaviour:
    torch.manual_seed(0)
    return VAEBehaviour(state_dim=3, action_mask=MASK, hidden_dim=16)


def _agent0_density(vae: VAEBehaviour, state: torch.Tensor, others: torch.Tensor,
                    grid: torch.Tensor) -> torch.Tensor:
    """beta_0(a_0 | s) on a grid of agent 0's real action, agent 1 acting ``others``."""
    actions = torch.zeros(len(grid), 2, 2)
    actions[:, 0, 0] = grid
    actions[:, 0, 1] = 0.7          # padded: must not matter
    actions[:, 1] = others
    with torch.no_grad():
        return vae.log_prob(state.expand(len(grid), -1), actions, SAMPLES)[:, 0].exp()


def test_agent_density_integrates_to_one_whatever_the_others_do():
    """beta_i(a_i | s) is agent i's marginal: it integrates to 1 over a_i, and the other agents'
    actions (which the encoder sees) move it only by the sampling error."""
    vae = _vae()
    state = torch.tensor([[0.3, -1.2, 0.5]])
    grid = torch.linspace(-4.0, 4.0, 321)     # the decoder's mean lies in [-1, 1], std 0.35
    step = (grid[1] - grid[0]).item()
    densities = [_agent0_density(vae, state, torch.tensor(others), grid)
                 for others in ([-0.9, 0.8], [0.9, -0.3])]
    for density in densities:
        assert abs(density.sum().item() * step - 1.0) < 0.03
    assert torch.allclose(densities[0], densities[1], rtol=0.1, atol=1e-3)


def test_padded_dimensions_are_ignored():
    vae = _vae()
    state = torch.randn(5, 3)
    actions = torch.rand(5, 2, 2) * 2 - 1
    moved = actions.clone()
    moved[:, 0, 1] = -actions[:, 0, 1]
    torch.manual_seed(1)
    before = vae.log_prob(state, actions, 8)
    torch.manual_seed(1)
    after = vae.log_prob(state, moved, 8)
    assert torch.equal(before, after)
    decoded = vae.decode(state, torch.randn(5, 3, vae.latent_dim))          # 3 draws per state
    assert torch.equal(decoded[..., 0, 1], torch.zeros(5, 3))


def test_fit_puts_the_density_on_the_data(tiny_continuous):
    """After fitting data whose agents always act 0.5, every agent's density is higher there."""
    info, data = tiny_continuous(action_dims=(1, 2), fixed_action=0.5)
    vae = VAEBehaviour(info.state_dim, info.action_mask, hidden_dim=32)
    vae.fit(data, steps=300, batch_size=64, lr=1e-3)
    state = torch.as_tensor(data["states"][:50])
    mask = torch.as_tensor(info.action_mask, dtype=torch.float32)
    with torch.no_grad():
        on_data = vae.log_prob(state, 0.5 * mask.expand(50, -1, -1), 32)
        off_data = vae.log_prob(state, -0.5 * mask.expand(50, -1, -1), 32)
    assert (on_data > off_data + 1.0).all()


def test_bfloat16_hidden_layers_estimate_within_the_draws_noise():
    """The same draws through bfloat16 hidden layers move log beta far less than a new set of
    draws does in float32 (the estimator's own noise)."""
    vae = VAEBehaviour(state_dim=3, action_mask=MASK, hidden_dim=64)
    state, actions = torch.randn(200, 3), torch.rand(200, 2, 2) * 2 - 1

    def estimate(dtype, draws):
        torch.manual_seed(draws)
        with torch.no_grad():
            return vae.log_prob(state, actions, 8, hidden_dtype=dtype)

    exact = estimate(torch.float32, 0)
    rounding = (estimate(torch.bfloat16, 0) - exact).abs().mean()
    redrawn = (estimate(torch.float32, 1) - exact).abs().mean()
    assert 0 < rounding < redrawn / 20


def test_decoding_in_chunks_of_states_gives_the_whole_batch_estimate():
    """log_prob decodes its draws a few states at a time (for the cache); every state keeps its
    own draws, so the estimate is the whole batch's, including a last, shorter chunk."""
    vae = _vae()
    state, actions = torch.randn(37, 3), torch.rand(37, 2, 2) * 2 - 1

    def estimate(states_per_chunk):
        torch.manual_seed(3)
        with torch.no_grad():
            return vae.log_prob(state, actions, 8, states_per_chunk=states_per_chunk)

    whole = estimate(37)
    for states_per_chunk in (1, 5, 16):
        torch.testing.assert_close(estimate(states_per_chunk), whole)
