"""Deploying fedclinic: the federation's PKI, process supervision and a real local deployment.

Operator tooling, run by people (``fedclinic pki``, ``fedclinic deploy``) rather than by the
federation itself: neither the ServerApp nor the ClientApp imports this package.
"""
