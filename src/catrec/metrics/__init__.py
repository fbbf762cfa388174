"""Ranking metrics (HR@K, NDCG@K, MRR) from full-ranking scores."""

from catrec.metrics.ranking import RankingAccumulator, hit_rate, mrr, ndcg, ranks_from_scores

__all__ = ["RankingAccumulator", "hit_rate", "mrr", "ndcg", "ranks_from_scores"]
