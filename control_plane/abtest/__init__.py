"""A/B testing: conversion events, per-slot results with significance, promotion."""
